"""The documentation holds together: every relative link resolves, every node has a help page that ComfyUI
shows in its node-help panel, and the pages and the nodes reference name every input the schemas have."""
import asyncio
import re
from pathlib import Path

import pytest

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md")), *sorted((REPO / "web" / "docs").rglob("*.md"))]
HELP_PAGES = REPO / "web" / "docs"
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped, spaces to hyphens,
    repeated ones numbered."""
    anchors, seen = set(), {}
    in_code = False
    for line in markdown.splitlines():
        if line.startswith("```"):
            in_code = not in_code
        match = None if in_code else re.match(r"#{1,6}\s+(.*)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)        # links inside code are not links
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(REPO)) for p in PAGES])
def test_every_relative_link_resolves(page):
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        assert resolved.exists(), f"{page.relative_to(REPO)} links to {target}, which does not exist"
        if anchor:
            assert resolved.suffix == ".md" and anchor in heading_anchors(resolved.read_text()), \
                f"{page.relative_to(REPO)} links to {target}: no such heading"


def test_the_link_check_catches_a_broken_link(tmp_path):
    """The check above can fail: a missing file and a missing heading are both caught."""
    page = tmp_path / "page.md"
    page.write_text("# A title\n\n[ok](#a-title) [gone](missing.md) [no heading](#nowhere)\n")
    links = relative_links(page)
    assert links == ["#a-title", "missing.md", "#nowhere"]
    assert "a-title" in heading_anchors(page.read_text()) and "nowhere" not in heading_anchors(page.read_text())
    assert not (tmp_path / "missing.md").exists()


def test_the_readme_is_short():
    """The README says what the pack is, how to install and start; the rest lives in docs/ (issue: under 12 KB)."""
    assert len((REPO / "README.md").read_bytes()) < 12 * 1024


@pytest.fixture(scope="module")
def schemas(pack):
    nodes = asyncio.run(asyncio.run(pack.comfy_entrypoint()).get_node_list())
    return [node.define_schema() for node in nodes]


def test_the_pack_serves_its_help_pages_from_web_directory(pack):
    assert (REPO / pack.WEB_DIRECTORY / "docs").resolve() == HELP_PAGES.resolve()


def test_every_node_has_a_help_page_that_names_its_inputs(schemas):
    assert {p.stem for p in HELP_PAGES.glob("*.md")} == {s.node_id for s in schemas}, \
        "one web/docs/<node id>.md per node, and none for a node that does not exist"
    for schema in schemas:
        page = (HELP_PAGES / f"{schema.node_id}.md").read_text()
        assert page.startswith(f"# {schema.display_name}\n"), schema.node_id
        for item in schema.inputs:
            assert f"**{item.id}**" in page, f"{schema.node_id}.md does not describe the input {item.id}"


def test_every_node_has_a_description_and_tooltips(schemas):
    """The help panel falls back to these, and the canvas shows them on hover."""
    for schema in schemas:
        assert schema.description, schema.node_id
        for item in schema.inputs:
            assert item.tooltip, f"{schema.node_id}.{item.id} has no tooltip"
        for item in schema.outputs:
            assert item.tooltip, f"{schema.node_id} output {item.display_name or item.id} has no tooltip"


def test_the_nodes_reference_documents_every_input_of_every_node(schemas):
    reference = (REPO / "docs" / "nodes.md").read_text()
    sections = dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", reference, flags=re.S | re.M))
    for schema in schemas:
        assert schema.display_name in sections, f"docs/nodes.md has no section for {schema.display_name}"
        assert f"`{schema.node_id}`" in reference, schema.node_id
        for item in schema.inputs:
            assert f"`{item.id}`" in sections[schema.display_name], \
                f"docs/nodes.md, {schema.display_name}: the input {item.id} is not documented"
