"""The engine: loading models (loader), running them (runners) and sharing them (scheduler), and which
devices the runtimes can use here (devices: the door the services and the CLI ask through).

``run``, ``embed``, ``bench`` and the chat session use it in process; ``serve`` with runner
processes. Nothing here imports a web framework or the CLI.
"""

from slmctl.engine.loader import Engine, LoadPlan, ModelDefaults, compose_system, load_plan
from slmctl.engine.scheduler import Scheduler, SchedulerSettings

__all__ = ["Engine", "LoadPlan", "ModelDefaults", "Scheduler", "SchedulerSettings", "compose_system", "load_plan"]
