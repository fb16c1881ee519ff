"""The transition table in docs/architecture.md is generated from the code, not hand-kept."""

from pathlib import Path

from torc_core.status import transition_table_markdown


def test_architecture_doc_has_the_current_transition_table() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "architecture.md").read_text()
    assert transition_table_markdown() in doc, (
        "docs/architecture.md is out of date: paste the output of "
        "python -c 'from torc_core.status import transition_table_markdown as t; print(t())'"
    )


def test_spec_fields_doc_lists_every_field_as_the_parser_knows_it() -> None:
    from torc_core.settings import fields_markdown

    doc = (Path(__file__).parents[2] / "docs" / "spec-fields.md").read_text()
    assert fields_markdown() in doc, (
        "docs/spec-fields.md is out of date: paste the output of "
        "python -c 'from torc_core.settings import fields_markdown as f; print(f())'"
    )
