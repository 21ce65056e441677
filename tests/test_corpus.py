import shutil
from pathlib import Path

import pytest

from assistant.config import ConfigError, load_config
from assistant.corpus import CorpusError, load_corpus, read_document


def test_fixture_corpus_loads(tiny_corpus):
    assert tiny_corpus.name == "tiny"
    assert {d.path for d in tiny_corpus.documents} == {"docs/returns.md", "docs/service.md"}
    assert len(tiny_corpus.questions("train", "answerable")) == 3
    assert tiny_corpus.document("docs/returns.md").title == "Returns"


def test_fingerprint_follows_content(tiny_corpus_dir):
    before = load_corpus(tiny_corpus_dir).fingerprint()
    assert load_corpus(tiny_corpus_dir).fingerprint() == before
    (tiny_corpus_dir / "docs" / "returns.md").write_text("# Returns\n\nChanged.\n")
    assert load_corpus(tiny_corpus_dir).fingerprint() != before


def test_every_bad_line_is_named(tiny_corpus_dir):
    qa = tiny_corpus_dir / "qa.jsonl"
    lines = qa.read_text().splitlines()
    lines[1] = "{not json"
    lines[3] = lines[3].replace('"question": "How much does return shipping cost?", ', "")
    lines[5] = lines[5].replace('"split": "test"', '"split": "holdout"')
    lines[7] = lines[7].replace("docs/service.md", "docs/missing.md")
    qa.write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError) as e:
        load_corpus(tiny_corpus_dir)
    msgs = [str(p) for p in e.value.problems]
    assert any(":2: invalid JSON" in m for m in msgs)
    assert any(":4: missing field 'question'" in m for m in msgs)
    assert any(":6: split:" in m and "holdout" in m for m in msgs)
    assert any(":8: source 'docs/missing.md'" in m for m in msgs)
    assert len(msgs) == 4


def test_config_errors_name_the_line(tmp_path):
    cfg = tmp_path / "corpus.yaml"
    cfg.write_text("name: x\ngeneration:\n  batch_size: 0\nlora:\n  rank: 8\n")
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    text = str(e.value)
    assert f"{cfg}:3: generation.batch_size" in text
    assert f"{cfg}:5: unknown field 'lora.rank'" in text
    cfg.write_text("name: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(cfg)


def test_html_documents_keep_headings(tmp_path):
    page = tmp_path / "p.html"
    page.write_text("<html><head><style>x{}</style></head><body><h1>Care</h1><p>Wash cold.</p>"
                    "<h2>Drying</h2><p>Air dry only.</p><script>evil()</script></body></html>")
    text = read_document(page)
    assert text.startswith("# Care") and "## Drying" in text and "Air dry only." in text
    assert "evil" not in text and "x{}" not in text


def test_artifacts_follow_the_corpus_folder_not_the_working_directory(tmp_path, monkeypatch):

    from assistant.corpus import PROJECT_ROOT

    a, b = tmp_path / "one" / "shop", tmp_path / "two" / "shop"  # same name, two folders
    for d in (a, b):
        shutil.copytree(Path(__file__).parent / "fixtures" / "tiny", d)
    monkeypatch.chdir(tmp_path)
    runs_a = load_corpus("one/shop").runs_dir
    monkeypatch.chdir(tmp_path / "one")
    assert load_corpus("shop").runs_dir == runs_a == a.resolve() / "runs"  # from anywhere, the same folder
    assert load_corpus(b).runs_dir != runs_a  # same corpus name, never the same artifacts
    assert load_corpus(PROJECT_ROOT / "corpora" / "ecostride").runs_dir == PROJECT_ROOT / "runs" / "ecostride"
    with open(a / "corpus.yaml", "a") as f:
        f.write("runs_dir: ../artifacts\n")
    assert load_corpus(a).runs_dir == (tmp_path / "one" / "artifacts").resolve()


# -- untrusted settings -----------------------------------------------------------------------
LAUGHS = "name: x\na: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n" + "".join(
    f"{n}: &{n} [{', '.join(['*' + p] * 9)}]\n" for p, n in zip("abcdefgh", "bcdefghi"))


@pytest.mark.parametrize("text,line", [
    (LAUGHS, 3),  # a "billion laughs": 9^9 strings from 300 bytes
    ("name: x\nmodel: &m {name: tiny-random}\ngenerator: *m\n", 3),
    ("name: x\nbase: &b {top_k: 3}\nretrieval:\n  <<: *b\n", 4),  # merge keys are aliases too
])
def test_yaml_aliases_are_refused_in_milliseconds(tmp_path, text, line):
    import time

    cfg = tmp_path / "corpus.yaml"
    cfg.write_text(text)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    assert time.perf_counter() - t0 < 0.5
    assert str(e.value) == (f"{cfg}:{line}: YAML aliases (*name, <<: *name) are not accepted in settings; "
                            "write the value out in full")


def test_settings_files_that_are_not_settings(tmp_path):
    import os

    cfg = tmp_path / "corpus.yaml"
    cfg.write_bytes(b"\xef\xbb\xbfname: bom\n")  # Notepad's byte-order mark
    assert load_config(cfg).name == "bom"
    cfg.write_text("name: x\ndescription: " + "y" * 300_000 + "\n")
    with pytest.raises(ConfigError, match=r"corpus.yaml:1: over the 256 KB"):
        load_config(cfg)
    cfg.unlink()
    os.mkfifo(cfg)  # a named pipe: reading it would block forever
    with pytest.raises(ConfigError, match=r"corpus.yaml:1: is a named pipe, not a regular file"):
        load_config(cfg)
