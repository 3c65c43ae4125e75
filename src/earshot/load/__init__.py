"""Load and capacity: Locust users streaming real speech at real time.

``session`` is one client session with no Locust in it; ``load/locustfile.py``
wraps it as a Locust user; ``runner`` runs that locustfile with Locust as a
library (in a process of its own, since Locust patches the standard library
with gevent); ``cli`` is what ``make load`` and ``make capacity`` call.
"""

from pathlib import Path

LOCUSTFILE = Path(__file__).resolve().parents[3] / "load" / "locustfile.py"  # a checkout's
