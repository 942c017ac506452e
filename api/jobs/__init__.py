"""Jobs: a durable queue (SQL records + huey), a worker, live progress, e-mail and webhooks.

`api.jobs.service.JobService` is the facade the routes use; `api.services.build_services`
builds it with everything it holds.
"""
