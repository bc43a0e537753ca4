"""html_record on lxml: text around removed elements, <br>, XHTML declarations, empty pages."""

from __future__ import annotations

import pytest

from finetuneflow.errors import ReaderError
from finetuneflow.ingest.html import html_record

CASES = [
    # (markup, main text): the text after a removed element (its lxml "tail") stays
    ("<div class='navbar'>N</div>after the bar<p>para</p>", "after the bar\n\npara"),
    ("<div>x<span class='cookie-note'>C</span> tail</div>", "x tail"),
    ("<p>a <b>x</b> <i>y</i><!-- note -->z</p>", "a x yz"),
    ("<p>one<br>two<br/>three</p>", "one\ntwo\nthree"),
    ("<pre>line1\n  line2<br>line3</pre>", "line1\n  line2\nline3"),
    ("<ul><li>one<ul><li>sub</li></ul> tail</li><li>two</li></ul>", "- one tail\n  - sub\n- two"),
    ("<table><tr><td>a</td><td><table><tr><td>in</td></tr></table></td></tr></table>", "a | in"),
    ("text before <div>block</div> text after", "text before\n\nblock\n\ntext after"),
    ("<p>&amp; &lt;tag&gt; &#8212; x</p>", "& <tag> \u2014 x"),
    ("<p>private \ue000 use</p>", "private use"),  # the <br> marker in a page is not a break
]


@pytest.mark.parametrize(("markup", "text"), CASES)
def test_main_text(markup: str, text: str) -> None:
    assert html_record(markup).text == text


def test_xhtml_with_an_xml_declaration_is_read() -> None:
    page = (
        "<?xml version='1.0' encoding='utf-8'?>\n<html xmlns='http://www.w3.org/1999/xhtml'>"
        "<head><title> The  title </title></head><body><p>Body.</p></body></html>"
    )
    record = html_record(page)
    assert record.text == "Body." and record.meta == {"title": "The title"}


def test_nested_articles_are_read_once() -> None:
    page = "<article><p>A</p><article><p>B</p></article></article><article>C</article>"
    assert html_record(page).text == "A\n\nB\n\nC"


@pytest.mark.parametrize("markup", ["", "   \n", "<script>x()</script>", "<nav>Home</nav>"])
def test_pages_without_text_raise(markup: str) -> None:
    with pytest.raises(ReaderError, match="no readable text"):
        html_record(markup)


def test_elements_nested_past_pythons_stack_are_read() -> None:
    # the walker recursed twice per level: ~500 levels of unclosed <div> raised RecursionError
    deep = (
        "<html><body>" + "<div>" * 1500 + "<p>deep text</p>" + "</div>" * 1500 + "<p>after</p></body></html>"
    )
    assert html_record(deep).text == "deep text\n\nafter"


def test_a_page_the_parser_stops_in_is_refused_not_cut() -> None:
    # libxml2 stops at 2048 levels even with huge_tree and returned the page read so far
    deep = "<html><body><p>before</p>" + "<div>" * 3000 + "<p>deep</p>" + "</div>" * 3000 + "</body></html>"
    with pytest.raises(ReaderError, match="the HTML parser stopped at line 1 .*Excessive depth.*close them"):
        html_record(deep)
