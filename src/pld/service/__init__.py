"""``pld serve``: a distilled classifier as an HTTP service (see ``pld.service.app``).

classifier = RunDirClassifier(run_dir, student_client("local:smollm2?slots=4"))
serve(create_app(classifier, max_queue=256, max_batch=8), "127.0.0.1", 8000)
"""

from pld.service.adapter import RunDirClassifier, rulebook_version, student_client
from pld.service.app import create_app
from pld.service.base import Classifier
from pld.service.runner import Running, run_service, serve

__all__ = [
    "Classifier",
    "RunDirClassifier",
    "Running",
    "create_app",
    "rulebook_version",
    "run_service",
    "serve",
    "student_client",
]
