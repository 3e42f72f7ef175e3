"""The metric groups, in the order their families appear on /metrics (see exporter.groups.base)."""

from exporter.groups.apps import Apps
from exporter.groups.backlog import Backlog
from exporter.groups.jobs import Jobs
from exporter.groups.nodes import Nodes
from exporter.groups.perjob import PerJob
from exporter.groups.usage import Usage
from exporter.groups.users import Users

GROUPS = (Jobs, Nodes, Backlog, Usage, Apps, Users, PerJob)
