# -*- test-case-name: tests.test_bulk_resolve -*-
"""Wheel platform tags: what a platform installs, and the marker variables it decides."""

import re

from packaging.tags import mac_platforms

from pypicache.errors import BadRequest

_LEGACY_MANYLINUX = {
    "manylinux2014": (2, 17),
    "manylinux2010": (2, 12),
    "manylinux1": (2, 5),
}


_LEGACY_MANYLINUX_NAMES = {v: k for k, v in _LEGACY_MANYLINUX.items()}


_LEGACY_MANYLINUX_ARCHES = {
    "manylinux2014": {
        "x86_64",
        "i686",
        "aarch64",
        "armv7l",
        "ppc64",
        "ppc64le",
        "s390x",
    },
    "manylinux2010": {"x86_64", "i686"},
    "manylinux1": {"x86_64", "i686"},
}


WINDOWS_MACHINES = {
    "win32": "x86",
    "win_amd64": "AMD64",
    "win_arm64": "ARM64",
    "win_ia64": "ia64",
}


PLATFORM_TAG = re.compile(r"^[a-z0-9][a-z0-9_.]*$")


#: Largest version number in a platform tag or a Python version: tags are
#: expanded by counting down from it, so it bounds the work a request makes.
MAX_VERSION_NUMBER = 99


def _manylinux_parts(platform: str) -> tuple[int, int, str] | None:
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if match:
        return int(match[1]), int(match[2]), match[3]
    for legacy, (major, minor) in _LEGACY_MANYLINUX.items():
        if platform.startswith(legacy + "_"):
            return major, minor, platform[len(legacy) + 1 :]
    return None


def expand_platform(platform: str) -> list[str]:
    """The platform tags a machine of ``platform`` installs, most specific first.

    ``manylinux_2_28_x86_64`` also installs older manylinux wheels (and their
    legacy aliases, and ``linux_x86_64``); ``macosx_11_0_arm64`` older macOS
    and universal2 wheels (as :func:`packaging.tags.mac_platforms` lists them).

    :raises BadRequest: for a version number past :data:`MAX_VERSION_NUMBER`.
    """
    check_version_numbers(platform, "platform")
    manylinux = _manylinux_parts(platform)
    if manylinux is not None:
        major, minor, arch = manylinux
        lowest = 5 if arch in ("x86_64", "i686") else 17
        platforms = []
        for m in range(minor, lowest - 1, -1):
            platforms.append(f"manylinux_{major}_{m}_{arch}")
            legacy = _LEGACY_MANYLINUX_NAMES.get((major, m))
            if legacy is not None and arch in _LEGACY_MANYLINUX_ARCHES[legacy]:
                platforms.append(f"{legacy}_{arch}")
        if platform not in platforms:
            platforms.insert(0, platform)
        platforms.append(f"linux_{arch}")
        return platforms
    musl = re.fullmatch(r"musllinux_(\d+)_(\d+)_(\w+)", platform)
    if musl:
        major, minor, arch = int(musl[1]), int(musl[2]), musl[3]
        return [f"musllinux_{major}_{m}_{arch}" for m in range(minor, -1, -1)] + [
            f"linux_{arch}"
        ]
    mac = re.fullmatch(r"macosx_(\d+)_(\d+)_(\w+)", platform)
    if mac:
        return list(mac_platforms((int(mac[1]), int(mac[2])), mac[3]))
    return [platform]


def platform_environment(platform: str) -> dict[str, str]:
    """The marker variables a platform tag decides.

    :raises BadRequest: for a platform family whose markers are unknown.
    """
    if platform in WINDOWS_MACHINES:
        return {
            "sys_platform": "win32",
            "platform_system": "Windows",
            "os_name": "nt",
            "platform_machine": WINDOWS_MACHINES[platform],
        }
    mac = re.fullmatch(r"macosx_\d+_\d+_(\w+)", platform)
    if mac:
        arch = mac[1]
        machine = (
            "arm64"
            if arch in ("arm64", "universal2")
            else "x86_64" if arch in ("intel", "fat64", "fat3", "universal") else arch
        )
        return {
            "sys_platform": "darwin",
            "platform_system": "Darwin",
            "os_name": "posix",
            "platform_machine": machine,
        }
    linux = _manylinux_parts(platform)
    arch = linux[2] if linux else None
    if arch is None:
        match = re.fullmatch(r"(?:musllinux_\d+_\d+|linux)_(\w+)", platform)
        arch = match[1] if match else None
    if arch is not None:
        return {
            "sys_platform": "linux",
            "platform_system": "Linux",
            "os_name": "posix",
            "platform_machine": arch,
        }
    raise BadRequest(
        f"Unknown platform {platform!r}: use a wheel platform tag such as manylinux_2_17_x86_64, "
        "musllinux_1_2_aarch64, macosx_11_0_arm64, win_amd64 or win32"
    )


def check_version_numbers(text: str, what: str) -> None:
    """Refuse a versioned platform tag (``manylinux_X_Y``, ``musllinux_X_Y``,
    ``macosx_X_Y``) whose numbers pass :data:`MAX_VERSION_NUMBER`.

    :raises BadRequest: naming the tag.
    """
    match = re.match(r"(?:manylinux|musllinux|macosx)_(\d+)_(\d+)_", text)
    if match and any(
        len(n) > 2 and int(n) > MAX_VERSION_NUMBER for n in match.groups()
    ):
        raise BadRequest(
            f"Invalid {what} {text[:100]!r}: version numbers go up to {MAX_VERSION_NUMBER}"
        )
