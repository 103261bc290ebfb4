"""Drive a real, headless ComfyUI server: start it with this pack, post workflows, read results.

Used by the main job (``scripts/demo.py``) and the end-to-end tests. Standard library only.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from scripts.comfy_env import REPO, comfyui_dir

PACK_FOLDER = "comfyui-concept-erasure"
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ComfyServer:
    """``with ComfyServer(base_dir) as server: ...`` runs ``main.py --cpu`` on a free loopback port.

    ``base_dir`` becomes ComfyUI's base directory (models, input, output, user, custom_nodes);
    the pack is linked into its ``custom_nodes`` so nothing is copied or installed.
    """

    def __init__(self, base_dir: Path, comfyui: Path | None = None, python: str = sys.executable,
                 startup_timeout: float = 180.0):
        self.base_dir = Path(base_dir).resolve()
        self.comfyui_dir = comfyui or comfyui_dir()
        self.python = python
        self.startup_timeout = startup_timeout
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self.log_path = self.base_dir / "comfyui.log"

    def __enter__(self) -> "ComfyServer":
        if not (self.comfyui_dir / "main.py").is_file():
            raise RuntimeError(f"No ComfyUI at {self.comfyui_dir}: run scripts/setup.sh or set COMFYUI_DIR.")
        custom_nodes = self.base_dir / "custom_nodes"
        custom_nodes.mkdir(parents=True, exist_ok=True)
        link = custom_nodes / PACK_FOLDER
        if not link.exists():
            link.symlink_to(REPO, target_is_directory=True)
        (self.base_dir / "user").mkdir(exist_ok=True)
        command = [self.python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(self.port),
                   "--base-directory", str(self.base_dir), "--database-url", "sqlite:///:memory:",
                   "--disable-auto-launch"]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=self.comfyui_dir, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.time() + self.startup_timeout
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI exited during start-up:\n{self.log()}")
            try:
                self.get("/system_stats")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        self.__exit__(None, None, None)
        raise TimeoutError(f"ComfyUI did not answer within {self.startup_timeout:.0f} s:\n{self.log()}")

    def __exit__(self, *exc) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        if hasattr(self, "_log"):
            self._log.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=30) as response:
            return json.loads(response.read())

    def post_prompt(self, prompt: dict) -> str:
        """Queue an API-format workflow; a validation error raises with ComfyUI's own message."""
        body = json.dumps({"prompt": prompt, "client_id": str(uuid.uuid4())}).encode()
        request = urllib.request.Request(self.url + "/prompt", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return json.loads(response.read())["prompt_id"]
        except urllib.error.HTTPError as error:
            raise RuntimeError(f"ComfyUI rejected the workflow: {error.read().decode(errors='replace')}") from error

    def wait(self, prompt_id: str, timeout: float = 600.0, raise_on_error: bool = True) -> dict:
        """The history entry of a finished prompt (its ``status`` says whether it succeeded)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                failed = entry["status"].get("status_str") == "error" or not entry["status"]["completed"]
                if failed and raise_on_error:
                    messages = entry["status"].get("messages", [])
                    raise RuntimeError(f"Workflow failed: {json.dumps(messages)[:4000]}\n{self.log()[-4000:]}")
                return entry
            if self.process.poll() is not None:
                raise RuntimeError(f"ComfyUI died while running the workflow:\n{self.log()}")
            time.sleep(0.25)
        raise TimeoutError(f"Workflow {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.post_prompt(prompt), timeout)


def _widget_names(node_info: dict) -> list[tuple[str, bool]]:
    """Widget inputs of a node type in order, each with whether the UI adds a 'control after generate' value."""
    names = []
    for section in ("required", "optional"):
        for name, spec in node_info["input"].get(section, {}).items():
            kind = spec[0]
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if (isinstance(kind, list) or kind in WIDGET_TYPES) and not options.get("forceInput"):
                names.append((name, bool(options.get("control_after_generate"))))
    return names


_SAVED_BEFORE = object()


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """Convert a workflow as the UI saves it (nodes, links, widgets_values) into the API format /prompt takes."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):          # muted or bypassed
            continue
        info = object_info.get(node["type"])
        if info is None:
            raise KeyError(f"Node type {node['type']!r} is not known to this ComfyUI (missing custom node?)")
        inputs = {}
        for socket_input in node.get("inputs", []):
            if socket_input.get("link") is not None:
                origin = links[socket_input["link"]]
                inputs[socket_input["name"]] = [str(origin[1]), origin[2]]
        values = iter(node.get("widgets_values", []))
        for name, has_control in _widget_names(info):
            value = next(values, _SAVED_BEFORE)
            if value is _SAVED_BEFORE:      # saved before the node gained this (optional) input: its default
                break
            if has_control:
                next(values)
            inputs.setdefault(name, value)
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt
