"""YAML spec text to a plain document, with aliases bounded: the part of :mod:`.load` that
needs PyYAML, imported only when YAML is read (its import is ~20 ms of a server's start)."""

from __future__ import annotations

import yaml

from .errors import SpecError


class _AliasBoundedLoader(yaml.SafeLoader):
    """A SafeLoader that counts what its aliases expand to, and stops at a limit.

    Why count while composing: the composed document is a graph in which an alias is the
    anchored node itself, so a bomb costs nothing until something walks it as a tree
    (JSON for the server, the parser's checks). Each anchored node's *expanded* size is known
    when it is complete (nodes composed meanwhile, aliases inside it at their own expanded
    size); every use of an alias adds it. Past ``max_alias_nodes`` added, the alias is a
    located error; an alias inside the node it names (a recursive structure) is one at once.
    """

    def __init__(self, stream: str, max_alias_nodes: int) -> None:
        super().__init__(stream)
        self.max_alias_nodes = max_alias_nodes
        self.nodes = 0  # composed so far, an alias counting as the nodes it stands for
        self.added = 0  # the part aliases added
        self.sizes: dict[object, int] = {}  # anchor -> expanded size of its (complete) node

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent):
            size = self.sizes.get(event.anchor)
            node = super().compose_node(parent, index)  # an undefined alias: ComposerError
            mark = event.start_mark
            where = f"YAML: alias '*{event.anchor}'"
            if mark is not None:
                where += f" at line {mark.line + 1}, column {mark.column + 1}"
            if size is None:
                raise SpecError([f"{where} refers to the node that contains it "
                                 "(a recursive structure)"])
            self.nodes += size
            self.added += size
            if self.added > self.max_alias_nodes:
                raise SpecError([f"{where} expands the document past {self.max_alias_nodes} "
                                 "nodes (an alias bomb?)"])
            return node
        start = self.nodes
        self.nodes += 1
        node = super().compose_node(parent, index)
        if event.anchor is not None:
            self.sizes[event.anchor] = self.nodes - start
        return node


def load_yaml(text: str, max_alias_nodes: int) -> object:
    """``text`` loaded with aliases bounded; a syntax error is a SpecError with its line
    and column."""
    loader = _AliasBoundedLoader(text, max_alias_nodes)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        if mark is not None:
            raise SpecError(
                [f"YAML syntax error at line {mark.line + 1}, column {mark.column + 1}: "
                 f"{problem}"]
            ) from None
        raise SpecError([f"YAML syntax error: {problem}"]) from None
    finally:
        loader.dispose()
