import pytest

from asagi_dagster.web.noai import has_noai


@pytest.mark.parametrize(
    "directives",
    [
        "noindex noai",  # space-separated, as pages write <meta name=robots>
        "noindex  noimageai",
        "noindex;noai",
        "noindex,noai",
        "NoIndex, NOAI",
        "googlebot: noai",
        "googlebot:noimageai",
        "otherbot: noindex noai",
        "index,noindex noai",  # two <meta name=robots> tags, as Page.robots joins them
        "gptbot: noimageai",  # <meta name=GPTBot>, as Page.robots names it
        "noai\n",
    ],
)
def test_noai_in_every_form_pages_and_headers_write_it(directives):
    assert has_noai(directives) is True


@pytest.mark.parametrize(
    "directives",
    [None, "", "noindex nofollow", "index, follow", "noaix", "xnoai", "no ai", "noimage ai", "max-image-preview:none", "unavailable_after: 25 Jun 2030"],
)
def test_other_directives_are_not_noai(directives):
    assert has_noai(directives) is False
