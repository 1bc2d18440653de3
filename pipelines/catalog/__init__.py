"""The shipped pipelines; every module here is imported on start."""
