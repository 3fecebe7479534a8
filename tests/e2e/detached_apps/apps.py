"""Deployments used by the detached-mode and job-submission tests."""

import os

import ray_serving_ext as serve


@serve.deployment
class Keeper:
    def __call__(self, request=None) -> str:
        return f"kept {os.getpid()}"


@serve.deployment
def short_lived(request=None) -> str:
    return "short-lived"


@serve.deployment
def from_job(request=None) -> str:
    return "deployed by a job"
