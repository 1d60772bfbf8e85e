#!/usr/bin/python
"""Ansible module free_space: the free bytes of the filesystem that holds (or will hold) a path."""

from __future__ import annotations

import os

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: free_space
short_description: Free space on the filesystems that hold (or will hold) some paths
description:
  - For each path, finds the nearest folder that exists (the path itself, else its parents), the
    mount point of its filesystem, and the bytes an unprivileged writer may still use there
    (C(statvfs) C(f_bavail)). Paths need not exist yet. Mount facts are not used, since they
    leave out filesystems such as overlay.
  - It only reads; it changes nothing and runs the same in check mode.
options:
  paths:
    description: Absolute paths.
    type: list
    elements: path
    required: true
author: llmfleet
"""

EXAMPLES = r"""
- name: Measure free space where the models go
  free_space:
    paths: [/data/models]
  register: space
"""

RETURN = r"""
filesystems:
  description: One entry per path, in order.
  returned: success
  type: list
  elements: dict
  sample:
    - {"path": "/data/models", "existing": "/data", "mount": "/data", "avail_bytes": 53687091200}
"""


def nearest_existing(path: str) -> str:
    """The path itself when it exists, else its nearest existing parent folder."""
    current = os.path.abspath(path)
    while not os.path.exists(current):
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return current


def mount_point(path: str) -> str:
    """The mount point of the filesystem that holds the existing ``path``."""
    current = os.path.realpath(path)
    while not os.path.ismount(current):
        current = os.path.dirname(current)
    return current


def measure(path: str) -> dict:
    existing = nearest_existing(path)
    stats = os.statvfs(existing)
    return {
        "path": path,
        "existing": existing,
        "mount": mount_point(existing),
        "avail_bytes": stats.f_bavail * stats.f_frsize,
    }


def main() -> None:
    module = AnsibleModule(
        argument_spec={"paths": {"type": "list", "elements": "path", "required": True}},
        supports_check_mode=True,
    )
    relative = [path for path in module.params["paths"] if not os.path.isabs(path)]
    if relative:
        module.fail_json(msg=f"free_space: paths must be absolute, got {', '.join(relative)}")
    try:
        filesystems = [measure(path) for path in module.params["paths"]]
    except OSError as error:
        module.fail_json(msg=f"free_space: cannot measure {error.filename}: {error.strerror}")
    module.exit_json(changed=False, filesystems=filesystems)


if __name__ == "__main__":
    main()
