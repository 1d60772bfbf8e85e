"""The fake PCI sysfs tree of the host whose GPU has no driver yet (pf-nodriver): test
material from the prepare step, which the PCI facts verify.yml checks are read from. Each
device of the inventory's test_sysfs_devices is a folder under
preflight_sysfs_root, with exactly the attributes the inventory gives it."""

from __future__ import annotations

testinfra_hosts = ["ansible://pf-nodriver"]

# The attributes prepare.yml writes, when the device has them.
PCI_ATTRIBUTES = [
    "vendor",
    "class",
    "device",
    "max_link_speed",
    "max_link_width",
    "current_link_speed",
    "current_link_width",
]


def test_the_fake_pci_tree_holds_the_inventorys_devices(host) -> None:
    hostvars = host.ansible.get_variables()
    devices = hostvars["test_sysfs_devices"]
    assert devices, "pf-nodriver has no fake PCI devices in the inventory"
    root = hostvars["preflight_sysfs_root"]
    assert root != "/sys"  # a fake tree, never the host's own
    folder = host.file(f"{root}/bus/pci/devices")
    assert sorted(folder.listdir()) == sorted(device["address"] for device in devices)
    for device in devices:
        path = f"{root}/bus/pci/devices/{device['address']}"
        assert host.file(path).is_directory and host.file(path).mode == 0o755
        for name in PCI_ATTRIBUTES:
            attribute = host.file(f"{path}/{name}")
            if name in device:
                assert attribute.mode == 0o444, attribute.path
                assert attribute.content_string == f"{device[name]}\n", attribute.path
            else:
                assert not attribute.exists, attribute.path
