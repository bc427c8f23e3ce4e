"""Validate: what a search asks for, checked once, before anything is planned or encoded."""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings

from collection.images import CheckedImage
from collection.metadata import declared_fields
from collection.metadata_filter import NO_FILTER, MetadataFilter, mentions_fields
from collection.models import MetadataField
from collection.query import QuerySyntaxError, parse_query
from collection.tags import clean_tags
from core.errors import Refused

RELEVANCE, DATE = "relevance", "date"
SORTS = (RELEVANCE, DATE)


class SearchError(Refused):
    """A search the service refuses."""

    code = "invalid_search"


class InvalidQuery(SearchError):
    code = "invalid_query"


class NotIndexed(SearchError):
    code = "not_indexed"
    status = 409


@dataclass(frozen=True)
class SearchRequest:
    """What to search for. Exactly one of ``text``, ``image_id`` and ``image`` is given."""

    text: str = ""
    image_id: int | None = None
    image: CheckedImage | None = None
    tags: tuple[str, ...] = ()
    metadata: MetadataFilter = NO_FILTER  # filters given beside the query (the API's parameters)
    sort: str = RELEVANCE
    page: int = 1
    page_size: int = 0  # 0: the configured default
    min_score: float | None = None
    max_relative_drop: float | None = None
    collapse: bool | None = None  # one image per near-duplicate group; None: LOUPE_COLLAPSE_NEAR_DUPLICATES
    # Where the first page's exploration slice moved a candidate up, (from, slot): a later page of the
    # same search continues the first page as it was shown (searchapp.pipeline.page.continue_first_page).
    explored: tuple[int, int] | None = None
    # False: this search gets the shared order, whatever the deployment and the experiment say (the API's
    # personalise=false, the page's cookie; ranking.personal).
    personalise: bool = True

    @property
    def kind(self) -> str:
        """ "similar" (an image of the collection), "image" (an upload) or "text"."""
        return "similar" if self.image_id is not None else "image" if self.image is not None else "text"


@dataclass(frozen=True)
class ValidSearch:
    """A request ``validate`` accepted: the query text without its syntax, all tags, the page resolved."""

    request: SearchRequest
    text: str
    tags: tuple[str, ...]
    page: int
    page_size: int
    metadata: MetadataFilter = NO_FILTER  # the query's filter tokens and the request's, together
    sort: str = RELEVANCE
    date_field: str = ""  # with sort=date: the declared date field the results are ordered by
    collapse: bool = False  # one image per near-duplicate group (collection.near_duplicates)

    @property
    def kind(self) -> str:
        return self.request.kind

    @property
    def start(self) -> int:
        """The page's first index (0-based) in the served order."""
        return (self.page - 1) * self.page_size


def validate(request: SearchRequest) -> ValidSearch:
    given = sum([bool(request.text.strip()), request.image_id is not None, request.image is not None])
    if given == 0:
        raise InvalidQuery("Type something to search for, or give an image.", field="q")
    if given > 1:
        raise InvalidQuery("Search by text, by image id or by uploaded image: one at a time.")
    if len(request.text) > settings.LOUPE_MAX_QUERY_CHARS:
        raise InvalidQuery(
            f"The query is {len(request.text)} characters; the limit is {settings.LOUPE_MAX_QUERY_CHARS}.",
            field="q",
        )
    fields = declared_fields() if (request.sort == DATE or mentions_fields(request.text)) else {}
    try:
        parsed = parse_query(request.text, fields) if request.text else None
    except QuerySyntaxError as exc:
        raise InvalidQuery(str(exc), field="q") from None
    if parsed is not None and not parsed.text:
        raise InvalidQuery("Type something to search for beside the filters.", field="q")
    metadata = (parsed.metadata if parsed else NO_FILTER).and_also(request.metadata)
    tags = tuple(clean_tags([*(parsed.tags if parsed else ()), *request.tags]))
    if len(tags) > settings.LOUPE_MAX_QUERY_TAGS:
        raise InvalidQuery(f"At most {settings.LOUPE_MAX_QUERY_TAGS} tags per search.", field="tags")
    page_size = request.page_size or settings.LOUPE_PAGE_SIZE
    if not 1 <= page_size <= settings.LOUPE_MAX_PAGE_SIZE:
        raise InvalidQuery(f"page_size must be between 1 and {settings.LOUPE_MAX_PAGE_SIZE}.", field="page_size")
    if request.page < 1:
        raise InvalidQuery("page starts at 1.", field="page")
    if request.explored is not None:
        source, slot = request.explored
        if not 1 <= slot <= page_size < source <= settings.LOUPE_MAX_CANDIDATES:
            raise InvalidQuery(
                f"explored must be a position below the first page and a slot on it (1-{page_size}).", field="explored"
            )
    if request.page * page_size > settings.LOUPE_MAX_CANDIDATES:
        raise InvalidQuery(
            f"Results go {settings.LOUPE_MAX_CANDIDATES} deep; page {request.page} is past that.", field="page"
        )
    if request.max_relative_drop is not None and not 0 <= request.max_relative_drop < 1:
        raise InvalidQuery("max_drop must be at least 0 and below 1.", field="max_drop")
    if request.min_score is not None and not -1 <= request.min_score <= 1:
        raise InvalidQuery("min_score must be between -1 and 1.", field="min_score")
    return ValidSearch(
        request,
        parsed.text if parsed else "",
        tags,
        request.page,
        page_size,
        metadata=metadata,
        sort=request.sort,
        date_field=sort_field(request.sort, fields),
        collapse=settings.LOUPE_COLLAPSE_NEAR_DUPLICATES if request.collapse is None else request.collapse,
    )


def sort_field(sort: str, fields: dict[str, str]) -> str:
    """The date field a ``sort=date`` search orders by: the one named ``date``, else the first declared."""
    if sort == RELEVANCE:
        return ""
    if sort != DATE:
        raise InvalidQuery(f"sort is {RELEVANCE} or {DATE}, not {sort!r}.", field="sort")
    dates = [name for name, kind in fields.items() if kind == MetadataField.Kind.DATE]
    if not dates:
        raise InvalidQuery("sort=date needs a date field in the metadata schema; none is declared.", field="sort")
    return "date" if "date" in dates else sorted(dates)[0]
