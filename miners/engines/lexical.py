"""Stage 1 of the assistant without a model: the lexical classifier as an engine.

A job with ``classifier = "lexical"`` asks for one label of the project's label set;
this engine answers it in well under a millisecond, with no model loaded. It is the
only module under ``miners/`` that knows of ``chat_service``: the classifier, its
labels and the projects' menus live there.
"""

from __future__ import annotations

from collections.abc import Sequence

# Imported with this module, not when the first stage-1 job comes: `celery -A` puts
# the working directory on sys.path only while it loads the app.
from chat_service.intents import classify


class LexicalEngine:
    """Classifies a message for a project (``projects_file`` as in ``MIA_PROJECTS_FILE``)."""

    name = "lexical"

    def __init__(self, projects_file: str = "") -> None:
        self.projects_file = projects_file

    def classify(self, text: str, project: str = "", choices: Sequence[str] = ()) -> str:
        """The message's class; with ``choices``, always one of them."""
        return classify(text, project, self.projects_file, choices)
