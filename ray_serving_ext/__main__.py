"""`python -m ray_serving_ext ...`: the `serve-ext` command line."""

from ray_serving_ext.cli import main

if __name__ == "__main__":
    main()
