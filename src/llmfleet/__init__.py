"""llmfleet: the command line of the llmfleet Ansible project."""

__version__ = "0.1.0"
