"""``GET /jobs/<job_id>``: a job's status and, once done, its result.

A legacy endpoint: query parameters it does not know are ignored (it reads none)."""

from __future__ import annotations

from flask import Blueprint, jsonify
from flask.typing import ResponseReturnValue

from web.common import validation as v
from web.services import services

bp = Blueprint("jobs", __name__)


@bp.get("/jobs/<job_id>")
def job_status(job_id: str) -> ResponseReturnValue:
    return jsonify(services().jobs.status(v.path_id(job_id, "job_id")))
