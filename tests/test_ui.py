"""ComfyUI's real web frontend (the pinned comfyui-frontend-package) in headless Chromium: every
example workflow loads with every node of the pack rendered and none missing, and the workflows
are offered in the template browser. A screenshot per workflow goes to ``test-artifacts/ui/``."""
import json

import pytest

from conftest import REPO
from scripts.browser import chromium_path, open_frontend
from scripts.comfy_server import PACK_FOLDER, ComfyServer, _widget_names
from test_server import MODEL_FOLDERS, WORKFLOWS, model_file_names

ARTIFACTS = REPO / "test-artifacts" / "ui"
PACK_PREFIX = "CURE_"

# Loads a workflow the way a drop on the canvas does, and reports what the frontend made of it.
LOAD_AND_INSPECT = """async (workflow) => {
    const missing = [];
    const original = app.showMissingNodesError;
    app.showMissingNodesError = (types) => { missing.push(...types); return original.call(app, types); };
    try { await app.loadGraphData(workflow); } finally { app.showMissingNodesError = original; }
    await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
    const registered = LiteGraph.registered_node_types;
    return {
        missing: missing.map(t => typeof t === "string" ? t : t.type),
        nodes: app.graph.nodes.map(n => ({
            id: n.id, type: n.type, comfyClass: n.comfyClass ?? null, registered: n.type in registered,
            hasErrors: !!n.has_errors, title: n.title, width: n.size[0], height: n.size[1],
            widgets: (n.widgets ?? []).map(w => w.name),
        })),
        dialogs: [...document.querySelectorAll('[role="dialog"]')].map(d => d.innerText.slice(0, 300)),
    };
}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("comfyui_ui")
    for name in set().union(*(model_file_names(json.loads(p.read_text())) for p in WORKFLOWS)):
        for folder in MODEL_FOLDERS:   # stand-ins, so the loaders' combos hold the files the workflows name
            (base / "models" / folder).mkdir(parents=True, exist_ok=True)
            (base / "models" / folder / name).touch()
    with ComfyServer(base) as running:
        yield running


@pytest.fixture(scope="module")
def page(server):
    chromium_path()     # fails with what to install, before Playwright's own message
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with open_frontend(server.url) as opened:
        yield opened


def test_chromium_is_installed():
    """The UI tests are never skipped: without a browser they fail and say how to get one."""
    assert chromium_path()


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_example_workflow_renders_in_the_frontend(path, page, server):
    workflow = json.loads(path.read_text())
    errors_before = len(page.errors)
    seen = page.evaluate(LOAD_AND_INSPECT, workflow)
    page.screenshot(path=str(ARTIFACTS / f"{path.stem}.png"))
    assert seen["missing"] == [], f"the frontend reports missing node types: {seen['missing']}"
    assert not [d for d in seen["dialogs"] if "missing" in d.lower()], seen["dialogs"]
    assert page.errors[errors_before:] == []
    assert sorted(n["id"] for n in seen["nodes"]) == sorted(n["id"] for n in workflow["nodes"])
    object_info = server.get("/object_info")
    pack_nodes = [n for n in seen["nodes"] if n["type"].startswith(PACK_PREFIX)]
    assert pack_nodes, "the workflow has no node of this pack"
    for node in seen["nodes"]:
        assert node["registered"] and node["comfyClass"] == node["type"], node
        assert not node["hasErrors"], node
        assert node["width"] > 0 and node["height"] > 0, node
    for node in pack_nodes:      # rendered from the server's schema: every widget input, in order
        expected = [name for name, _ in _widget_names(object_info[node["type"]])]
        assert [w for w in node["widgets"] if w in expected] == expected, node
        assert node["title"], node


def test_a_node_type_the_server_lacks_is_caught(page):
    """The checks above can fail: a pack node the server does not know is reported missing."""
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    eraser = next(n for n in workflow["nodes"] if n["type"] == "CURE_EraseConcepts")
    eraser["type"] = "CURE_NotInstalled"
    seen = page.evaluate(LOAD_AND_INSPECT, workflow)
    page.keyboard.press("Escape")                  # close the frontend's missing-nodes dialog
    assert seen["missing"] == ["CURE_NotInstalled"]
    node = next(n for n in seen["nodes"] if n["id"] == eraser["id"])
    assert not node["registered"] and node["hasErrors"]


def test_workflow_templates_are_served_by_the_server(server):
    templates = server.get("/api/workflow_templates")
    assert sorted(templates[PACK_FOLDER]) == sorted(p.stem for p in WORKFLOWS)
    served = server.get(f"/api/workflow_templates/{PACK_FOLDER}/erase_style_sd15.json")
    assert served == json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())


def test_template_browser_lists_and_opens_the_pack_workflows(page):
    page.evaluate("() => app.graph.clear()")
    page.evaluate("() => app.extensionManager.command.execute('Comfy.BrowseTemplates')")
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(PACK_FOLDER, exact=False).first.click()
    card = dialog.get_by_text("erase_style_sd15", exact=False).first
    card.wait_for()
    page.screenshot(path=str(ARTIFACTS / "template_browser.png"))
    for path in WORKFLOWS:
        assert dialog.get_by_text(path.stem, exact=False).count() >= 1, path.stem
    card.click()
    page.wait_for_function("() => app.graph.nodes.some(n => n.type === 'CURE_EraseConcepts')")
    types = page.evaluate("() => app.graph.nodes.map(n => n.type)")
    shipped = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    assert sorted(types) == sorted(n["type"] for n in shipped["nodes"])


def test_the_help_panel_of_the_cure_node_renders_its_page(page):
    """Select the CURE node, click the selection toolbox's info button: the panel shows the pack's own help
    page (web/docs/CURE_EraseConcepts.md, not the description the frontend falls back to), picture included."""
    workflow = json.loads((REPO / "example_workflows" / "erase_style_sd15.json").read_text())
    page.evaluate(LOAD_AND_INSPECT, workflow)
    page.evaluate("""() => {
        const node = app.graph.nodes.find(n => n.type === 'CURE_EraseConcepts');
        app.canvas.deselectAll();
        app.canvas.selectNode(node);
        app.canvas.setDirty(true, true);
    }""")
    page.locator('[data-testid="info-button"]').first.click()
    content = page.locator(".node-help-content")
    content.get_by_role("heading", name="Erase Concepts (CURE)").first.wait_for()
    content.get_by_role("heading", name="How to use it").wait_for()     # only the shipped page has it
    page.wait_for_function("""() => {
        const image = document.querySelector('.node-help-content img');
        return image && image.complete && image.naturalWidth > 0;
    }""")
    source = page.evaluate("() => document.querySelector('.node-help-content img').src")
    page.screenshot(path=str(ARTIFACTS / "help_panel_cure.png"))
    assert source.endswith(f"/extensions/{PACK_FOLDER}/docs/images/miniature_erase_red.png"), source
    text = content.inner_text()
    for name in ("forget_concepts", "retain_concepts", "token_selection", "erase_pooled"):
        assert name in text, name
