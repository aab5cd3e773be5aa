"""Documents: every relative link and image in the README, the model card, the changelog, docs/ and the results
index points to a file that exists (and to a heading that exists, for links into Markdown); every results file
is named in its index; the card and the README keep their shape."""
import re
from pathlib import Path

import pytest

from conftest import REPO

RESULTS = REPO / "benchmarks" / "results"
DOCS = sorted({REPO / "README.md", REPO / "CHANGELOG.md", REPO / "checkpoints" / "README.md", RESULTS / "README.md",
               *REPO.glob("checkpoints/*/README.md"), *REPO.glob("docs/*.md")})
LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def links(text):
    """Targets of Markdown links and images outside code blocks."""
    return LINK.findall(FENCE.sub("", text))


def anchors(path):
    """GitHub-style heading anchors of a Markdown file."""
    seen, out = {}, set()
    for line in FENCE.sub("", path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            out.add(slug if n == 0 else f"{slug}-{n}")
    return out


def test_link_pattern_reads_links_images_and_skips_code():
    text = "see [a](x.md#b) and ![pic](docs/p.jpg) and [`c`](d/e.json)\n```\n[no](missing.md)\n```\n"
    assert links(text) == ["x.md#b", "docs/p.jpg", "d/e.json"]


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_exists(doc):
    broken = []
    for target in links(doc.read_text(encoding="utf-8")):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        path = (doc.parent / file_part).resolve() if file_part else doc
        if not path.exists():
            broken.append(f"{target} (no file {path})")
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target} (no heading #{anchor} in {path.name})")
    assert not broken, f"{doc.relative_to(REPO)}: broken links: {broken}"


def test_every_results_file_is_named_in_the_index():
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    files = [p for p in RESULTS.rglob("*") if p.is_file() and p.name != "README.md"]
    assert files
    missing = [str(p.relative_to(RESULTS)) for p in files if str(p.relative_to(RESULTS)) not in index]
    assert not missing, f"not in benchmarks/results/README.md: {missing}"


def test_model_card_is_a_card():
    card = (REPO / "checkpoints" / "README.md").read_text(encoding="utf-8")
    front = re.match(r"---\n(.*?)\n---\n", card, re.S)
    assert front and re.search(r"^license:\s*\S+", front.group(1), re.M)
    assert len(card.splitlines()) <= 200
    for heading in ("Intended use", "Limits", "Evaluation", "Training data", "Files", "Citation"):
        assert re.search(rf"^## {heading}", card, re.M), heading


def test_model_card_sha256_match_the_files():
    import hashlib

    card = (REPO / "checkpoints" / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| \[?`(dagan-small/[^`]+)`\]?[^|]*\| `([0-9a-f]{64})` \|", card, re.M)
    assert {name for name, _ in rows} == {"dagan-small/model.pt", "dagan-small/config.yaml"}
    for name, digest in rows:
        assert hashlib.sha256((REPO / "checkpoints" / name).read_bytes()).hexdigest() == digest, name


def test_readme_shows_results_before_the_first_code_block():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 350
    picture = readme.index("![")
    assert picture < readme.index("```")
    assert "<!--" not in readme
    assert not re.search(r"\bissue[ -]?\d+", readme, re.I)
