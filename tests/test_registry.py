"""pyproject.toml is ready for the Comfy Registry: the registry's documented field rules, its own
tool (comfy-cli's ``comfy node validate``, as publishing runs it), ComfyUI's parser, and one version."""
import os
import re
import shutil
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PROJECT, COMFY = PYPROJECT["project"], PYPROJECT["tool"]["comfy"]


def comfy_cli(*args: str, cwd=REPO) -> subprocess.CompletedProcess:
    """comfy-cli without prompts or telemetry (CI has no terminal)."""
    env = {**os.environ, "DO_NOT_TRACK": "1", "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "comfy_cli", "--skip-prompt", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)


def test_project_fields_follow_the_registry_specification():
    name = PROJECT["name"]
    # Under 100 characters; letters, digits, '-', '_', '.'; no two special characters in a row; starts with a letter.
    assert len(name) < 100 and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*([-_.][A-Za-z0-9]+)*", name), name
    assert re.fullmatch(r"\d+\.\d+\.\d+", PROJECT["version"]), "version must be X.Y.Z (semantic versioning)"
    assert (REPO / PROJECT["license"]["file"]).is_file()
    assert PROJECT["description"] and PROJECT["requires-python"].startswith(">=")
    assert re.fullmatch(r"[a-z0-9][a-z0-9-]*", COMFY["PublisherId"]) and COMFY["DisplayName"]
    assert re.fullmatch(r">=\d+\.\d+\.\d+", COMFY["requires-comfyui"])
    for url in PROJECT.get("urls", {}).values():
        assert url.startswith("https://"), url


def test_requirements_match_the_declared_dependencies():
    """ComfyUI-Manager installs requirements.txt, the registry reads [project] dependencies: both empty."""
    lines = [line.strip() for line in (REPO / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == PROJECT["dependencies"] == []


def test_comfy_cli_reads_the_same_configuration():
    from comfy_cli.registry.config_parser import extract_node_configuration
    config = extract_node_configuration(str(REPO / "pyproject.toml"))
    assert config.project.name == PROJECT["name"] and config.project.version == PROJECT["version"]
    assert config.project.license.file == "LICENSE"
    assert config.project.supported_os == ["OS Independent"]
    assert config.project.supported_comfyui_version == COMFY["requires-comfyui"]
    assert config.tool_comfy.publisher_id == COMFY["PublisherId"]
    assert config.tool_comfy.display_name == COMFY["DisplayName"]


def test_comfy_node_validate_passes():
    result = comfy_cli("node", "validate")
    output = result.stdout + result.stderr        # comfy-cli prints part of it to stderr without a terminal
    assert result.returncode == 0, output
    assert "All validation checks passed" in output and "Security warnings" not in output, output


def test_comfy_node_validate_catches_a_missing_version(tmp_path):
    """The validator is not a formality: without a version the same command fails."""
    text = (REPO / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(re.sub(r'(?m)^version = ".*"$', "", text, count=1))
    shutil.copy(REPO / "LICENSE", tmp_path / "LICENSE")
    result = comfy_cli("node", "validate", cwd=tmp_path)
    assert result.returncode != 0 and "version is empty" in result.stdout + result.stderr


def test_one_version_everywhere(pack):
    import cure_core
    from comfy_config.config_parser import extract_node_configuration      # what ComfyUI itself reads
    assert cure_core.__version__ == PROJECT["version"]
    assert extract_node_configuration(str(REPO)).project.version == PROJECT["version"]
    assert "__version__ =" not in (REPO / "__init__.py").read_text()


@pytest.mark.parametrize("path", ["README.md", "LICENSE", "pyproject.toml", "requirements.txt", "__init__.py"])
def test_files_the_registry_and_manager_read_exist(path):
    assert (REPO / path).is_file()
