#!/usr/bin/python
"""Ansible module bundle_manifest: the signed manifest of the bundle a mirror serves."""

from __future__ import annotations

import os
import tempfile
from urllib.parse import urlparse

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.llmfleet_bundle import (
    MANIFEST,
    gpgv_verify,
    index_artifacts,
    join_url,
    load_manifest,
)
from ansible.module_utils.urls import open_url

DOCUMENTATION = r"""
module: bundle_manifest
short_description: Read and verify the manifest of the llmfleet bundle served by a mirror
description:
  - Fetches C(manifest.json) and its detached signature C(manifest.json.asc) from the bundle's
    URL, checks the signature with C(gpgv) against the bundle's public keyring, and returns the
    artifacts by name so that roles download each file with the sha256 the bundle states.
  - It only reads; it changes nothing on the host and runs the same in check mode.
options:
  url:
    description: The bundle's base URL on the mirror (C(http://), C(https://) or C(file://)).
    type: str
    required: true
  keyring:
    description: The bundle's public keyring (binary) on the host, as installed for apt.
    type: path
    required: true
  verify_signature:
    description: Check C(manifest.json.asc). Turn off only for a bundle built without signing.
    type: bool
    default: true
  timeout:
    description: Seconds to wait for the mirror.
    type: int
    default: 30
author: llmfleet
"""

EXAMPLES = r"""
- name: Read the bundle manifest from the mirror
  bundle_manifest:
    url: http://mirror.dc1.example
    keyring: /etc/apt/keyrings/llmfleet-bundle.gpg
  register: bundle
"""

RETURN = r"""
artifacts:
  description: Every artifact by its logical name.
  returned: success
  type: dict
  sample: {"llama-cpp-source": {"path": "files/llama.cpp/x.tar.gz", "sha256": "832d...",
           "size": 76589250, "kind": "file"}}
name:
  description: The bundle's name.
  returned: success
  type: str
created:
  description: When the bundle last changed.
  returned: success
  type: str
signing_key:
  description: The bundle key's fingerprint, path and sha256.
  returned: success
  type: dict
"""


def read_url(url: str, timeout: int) -> bytes:
    """The body at `url`; file:// is read directly (the mirror host reads its own copy)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        with open(parsed.path, "rb") as handle:
            return handle.read()
    return open_url(url, timeout=timeout).read()


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "url": {"type": "str", "required": True},
            "keyring": {"type": "path", "required": True},
            "verify_signature": {"type": "bool", "default": True},
            "timeout": {"type": "int", "default": 30},
        },
        supports_check_mode=True,
    )
    url = module.params["url"]
    manifest_url = join_url(url, MANIFEST)
    try:
        body = read_url(manifest_url, module.params["timeout"])
        signature = (
            read_url(manifest_url + ".asc", module.params["timeout"])
            if module.params["verify_signature"]
            else None
        )
    except Exception as exc:  # urllib, OSError and HTTP errors all mean "cannot read"
        module.fail_json(msg=f"cannot read the bundle manifest {manifest_url}: {exc}")

    if signature is not None:
        gpgv = module.get_bin_path("gpgv", required=True)
        with tempfile.TemporaryDirectory(dir=module.tmpdir) as folder:
            data_path = os.path.join(folder, MANIFEST)
            sig_path = data_path + ".asc"
            with open(data_path, "wb") as handle:
                handle.write(body)
            with open(sig_path, "wb") as handle:
                handle.write(signature)
            home = os.path.join(folder, "gnupg")
            os.mkdir(home, 0o700)
            check = gpgv_verify(
                lambda argv: module.run_command(argv, environ_update={"LC_ALL": "C"}),
                module.params["keyring"],
                sig_path,
                data_path,
                home,
                gpgv,
            )
        if not check.ok:
            module.fail_json(
                msg=f"the signature of {manifest_url} does not verify with "
                f"{module.params['keyring']}: {check.detail}"
            )

    try:
        manifest = load_manifest(body)
        artifacts = index_artifacts(manifest)
    except ValueError as exc:
        module.fail_json(msg=f"{manifest_url}: {exc}")
    module.exit_json(
        changed=False,
        artifacts=artifacts,
        name=manifest.get("name"),
        created=manifest.get("created"),
        signing_key=manifest.get("signing_key"),
    )


if __name__ == "__main__":
    main()
