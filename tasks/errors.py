"""The one error hierarchy. Each error knows its HTTP status; ``web.common.errors`` renders it."""

from __future__ import annotations

from typing import Any


class MiaError(Exception):
    """Base of every error this service raises on purpose."""

    status = 500
    code = "internal_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.message, "code": self.code, **self.details}


class ConfigError(MiaError):
    """A setting has a value that cannot be used."""

    code = "config_error"


class ValidationError(MiaError):
    """A request body or parameter is wrong; ``field`` names the culprit."""

    status = 400
    code = "invalid_request"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, field=field)


class Unauthorized(MiaError):
    status = 401
    code = "unauthorized"


class Forbidden(MiaError):
    status = 403
    code = "forbidden"


class NotFound(MiaError):
    status = 404
    code = "not_found"


class Conflict(MiaError):
    """The request is valid but clashes with the job's state (lease, result)."""

    status = 409
    code = "conflict"


class PayloadTooLarge(MiaError):
    status = 413
    code = "too_large"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message, field=field)


class ModelNotServed(MiaError):
    """A job asks for a model that no live miner serves: refused, not queued forever."""

    status = 422
    code = "model_not_served"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"no live miner serves model {model!r} (GET /v1/models lists the served ones)",
            field="model",
            model=model,
        )


class ModelNotFound(MiaError):
    """``ModelNotServed`` as OpenAI's API says it (``/v1``): 404 ``model_not_found``."""

    status = 404
    code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model `{model}` does not exist: no live miner serves it and the catalogue "
            "does not know it (GET /v1/models lists the served ones)",
            field="model",
            model=model,
        )


class ModelNotLoaded(MiaError):
    """A catalogue model that no live device has loaded (POST /api/v2/models/load)."""

    status = 503
    code = "model_not_loaded"

    def __init__(self, model: str, why: str = "", **details: Any) -> None:
        super().__init__(
            f"model {model!r} is known but no live device has it loaded "
            + (why or "(POST /api/v2/models/load, or MIA_AUTOLOAD=1)"),
            field="model",
            model=model,
            **details,
        )


class NoFit(MiaError):
    """No device has room for a model."""

    status = 507
    code = "does_not_fit"


class LoadFailed(MiaError):
    """A model load (an operation) ended in an error on its device."""

    status = 502
    code = "load_failed"


class ServiceUnavailable(MiaError):
    """A dependency (Redis, the database) does not answer."""

    status = 503
    code = "unavailable"


class Drained(ServiceUnavailable):
    """Every live device that holds the model is drained: refused, not queued where a
    device without the model could take it."""

    code = "drained"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"every live device that has model {model!r} is drained "
            "(POST /api/v2/miners/<id>/undrain lets one take work again)",
            field="model",
            model=model,
        )


class NotReplicated(ServiceUnavailable):
    """A job reached the Redis master but no replica confirmed it in time (a failover
    may be under way): not accepted. It may still run; ``GET /jobs/<id>`` tells."""

    code = "not_replicated"

    def __init__(self, job_id: str, why: str) -> None:
        super().__init__(
            f"job {job_id} not accepted: no Redis replica confirmed it ({why}); "
            "a failover may lose it, or it may still run: send it again",
            job_id=job_id,
            status_url=f"/jobs/{job_id}",
        )


class JobTimeout(MiaError):
    """The caller stopped waiting; the job goes on and can be fetched by id."""

    status = 504
    code = "timeout"


class LoadTimeout(JobTimeout):
    """A model was not live by the caller's deadline; its load goes on (``op_id``)."""


class JobFailed(MiaError):
    """The job ran and ended in an error."""

    status = 502
    code = "job_failed"
