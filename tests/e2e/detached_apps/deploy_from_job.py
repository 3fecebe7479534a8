"""Submitted with `ray job submit`: deploys a detached app and exits."""

import os
import sys

import ray

import ray_serving_ext as serve
from tests.e2e.detached_apps.apps import from_job

ray.init()  # inside a job: joins the cluster the job runs on
serve.start(detached=True, http_options={"host": "127.0.0.1", "port": int(sys.argv[1])})
serve.run(from_job.bind(), name="from_job", route_prefix="/job")
print("deployed from job", os.getpid(), flush=True)
