"""The Wireshark dissector that ships in the package (``wireshark/trioudp.lua``):
where it is, and installing it where Wireshark looks for Lua plugins.

Wireshark loads every ``.lua`` file in its personal Lua plugins folder at
start. ``tshark -G folders`` names that folder ("Personal Lua Plugins"); without
tshark to ask, it is ``~/.local/lib/wireshark/plugins`` on Linux and macOS and
``%APPDATA%\\Wireshark\\plugins`` on Windows.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

#: The dissector's file name, in the package and once installed.
PLUGIN = "trioudp.lua"
#: What ``tshark -G folders`` calls the folder a user's Lua plugins go in.
_PERSONAL_LUA_PLUGINS = "Personal Lua Plugins:"
#: Seconds ``tshark -G folders`` may take before the default folder is used.
TSHARK_TIMEOUT = 30.0


def plugin_source() -> bytes:
    """The dissector's Lua source, as packaged."""
    return (resources.files("trioudp") / "wireshark" / PLUGIN).read_bytes()


def plugin_path() -> Path:
    """The packaged dissector's file, for ``tshark -X lua_script:PATH``. Raises
    OSError if the package is not a folder on disk (imported from a zip file,
    say): then ``install()`` copies the dissector out of it."""
    resource = resources.files("trioudp") / "wireshark" / PLUGIN
    if not isinstance(resource, Path) or not resource.is_file():
        raise OSError(
            f"the Wireshark dissector {PLUGIN} is not a file on disk here ({resource}); "
            f"install() writes a copy of it into Wireshark's plugins folder"
        )
    return resource


def personal_plugins_folder() -> Path:
    """The folder Wireshark loads a user's Lua plugins from: what ``tshark -G
    folders`` says, or the platform's default where tshark is missing or says
    nothing."""
    tshark = shutil.which("tshark")
    if tshark is not None:
        try:
            listing = subprocess.run(
                [tshark, "-G", "folders"],
                capture_output=True,
                text=True,
                timeout=TSHARK_TIMEOUT,
                check=False,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            listing = ""
        for line in listing.splitlines():
            if line.startswith(_PERSONAL_LUA_PLUGINS):
                folder = line[len(_PERSONAL_LUA_PLUGINS) :].strip()
                if folder:
                    return Path(folder)
    if sys.platform == "win32":
        appdata = os.environ.get("APPDATA")
        base = Path(appdata) if appdata else Path.home() / "AppData" / "Roaming"
        return base / "Wireshark" / "plugins"
    return Path.home() / ".local" / "lib" / "wireshark" / "plugins"


def install(directory: str | os.PathLike[str] | None = None) -> Path:
    """Copy the dissector into ``directory`` (by default the personal Lua plugins
    folder, ``personal_plugins_folder()``), making the folder if need be, and
    return the installed file's path. Wireshark started after this loads it.
    Raises OSError, naming the path, if it cannot be written."""
    folder = personal_plugins_folder() if directory is None else Path(directory)
    target = folder / PLUGIN
    partial = folder / (PLUGIN + ".partial")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        # Written aside, then renamed: a Wireshark starting meanwhile never
        # loads half a dissector.
        partial.write_bytes(plugin_source())
        os.replace(partial, target)
    except OSError as exc:
        raise OSError(
            exc.errno,
            f"could not install the Wireshark dissector as {target}: {exc.strerror or exc}; "
            f"choose a folder you can write with --dir (Wireshark loads Lua plugins from the "
            f"folder `tshark -G folders` calls 'Personal Lua Plugins'), or run "
            f"tshark -X lua_script:<path that `trioudp wireshark` prints>",
        ) from exc
    return target
