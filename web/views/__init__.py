"""The blueprints, one per resource. A view parses its input, calls one function and
shapes the answer; what several views need lives in ``web.common``."""

from web.views import (
    admin,
    api_v2,
    assistant,
    chat,
    dashboard,
    docs,
    jobs,
    legacy,
    miners,
    openai,
    ops,
)

BLUEPRINTS = (
    chat.bp,
    openai.bp,
    assistant.bp,
    api_v2.bp,
    admin.bp,
    miners.bp,
    legacy.bp,
    jobs.bp,
    ops.bp,
    docs.bp,
    dashboard.bp,
)

__all__ = ["BLUEPRINTS", "api_v2"]
