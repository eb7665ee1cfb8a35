"""Revision loop: write -> review (score + feedback) -> revise while the score is below the
threshold and revisions remain -> gate `publish` -> publish the document once.

All of it is the shared writing loop (nodes/writing.py); this graph only adds its input, its
output and how a chosen draft becomes the document (a title line).
"""

from __future__ import annotations

import re

from langgraph.graph import START, StateGraph
from typing_extensions import TypedDict

from nodes.context import SignoffContext
from nodes.writing import GATE, PublishedOutput, WritingState, add_writing_loop

__all__ = ["GATE", "RevisionInput", "RevisionOutput", "RevisionState", "build_graph"]


class RevisionInput(TypedDict):
    brief: str
    #: where the document is published, resolved when the thread starts
    out_dir: str


RevisionOutput = PublishedOutput


class RevisionState(WritingState, RevisionInput, total=False):
    pass


def title_from_brief(brief: str) -> str:
    """A title for a draft that came without one: the brief's first sentence, shortened."""
    first = re.split(r"(?<=[.!?])\s|\n", brief.strip(), maxsplit=1)[0].rstrip(".!?")
    return first if len(first) <= 80 else first[:77].rsplit(" ", 1)[0] + "..."


def with_title(state: RevisionState, text: str) -> str:
    text = text.strip()
    return text if text.startswith("# ") else f"# {title_from_brief(state['brief'])}\n\n{text}"


def build_graph() -> StateGraph:
    """The uncompiled graph; compile it with a checkpointer and interrupt_before=[GATE]."""
    graph = StateGraph(RevisionState, context_schema=SignoffContext, input_schema=RevisionInput, output_schema=RevisionOutput)
    add_writing_loop(graph, graph_name="revision", compose=with_title)
    graph.add_edge(START, "write")
    return graph
