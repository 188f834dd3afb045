"""The catalog versions a ledger decided with, kept in its catalog log (CatalogPublished): which
catalog a workspace is billed on, and which loaded catalogs the ledger refuses.

A catalog id and version name one content, and a catalog id keeps its currency: a version
in another currency would bill the workspaces already on that id in it, crediting what they
paid in one currency one-for-one in the other. A new currency is a new catalog id."""

from __future__ import annotations

from typing import Any

from domain.catalog import Catalog
from domain.errors import LedgerError
from domain.subscription import Subscription


class PublishedCatalogs:
    """Ledger mixin: needs `catalogs` (loaded, by id), `default_catalog` and `catalog_log`."""

    catalogs: dict[str, Catalog]
    default_catalog: str
    catalog_log: Any
    _published: dict[tuple[str, str], tuple[str, str]] | None = None
    """(id, version) -> (content hash, currency), in the order they were published."""

    def catalog_for(self, sub: Subscription | None) -> Catalog:
        """The catalog a workspace is billed on: the one loaded, else the one published in the
        ledger last. A loaded catalog the ledger refuses (check_published) is catalog_conflict."""
        catalog_id = sub.catalog_id if sub else self.default_catalog
        if catalog_id not in self.catalogs:
            published = [e for e in self.catalog_log.get() if e.catalog_id == catalog_id]
            if not published:
                raise LedgerError("invalid_request", f"catalog {catalog_id!r} is neither loaded nor published")
            self.catalogs[catalog_id] = Catalog.model_validate(published[-1].document)
        catalog = self.catalogs[catalog_id]
        self.check_published(catalog)
        return catalog

    def catalog_recorded(self, catalog_version: str) -> Catalog | None:
        """The catalog `id@version` a fact records, as this ledger published it (else as loaded), or
        None: a fact is read with the policy it was decided under, not a later version's."""
        found = next((e for e in reversed(list(self.catalog_log.get()))
                      if f"{e.catalog_id}@{e.version}" == catalog_version), None)
        if found is not None:
            return Catalog.model_validate(found.document)
        return next((c for c in self.catalogs.values() if f"{c.id}@{c.version}" == catalog_version), None)

    def recorded_as_is(self, catalog: Catalog) -> bool:
        """Whether this ledger recorded the catalog's id and version with this very content."""
        return self._published_catalogs().get((catalog.id, catalog.version), ("",))[0] == catalog.content_hash

    def check_published(self, catalog: Catalog) -> None:
        """catalog_conflict when this ledger recorded the catalog's id and version with other
        content, or, for a version it has not recorded, the id's last version in another currency
        (it would reprice customers under another catalog's name, or in another currency)."""
        published = self._published_catalogs()
        claimed = published.get((catalog.id, catalog.version))
        if claimed is not None:
            if claimed[0] != catalog.content_hash:
                raise LedgerError("catalog_conflict", f"catalog {catalog.id} version {catalog.version} is recorded "
                                  "in this ledger with other content: the loaded file is not that catalog; give it a "
                                  "new version")
            return
        currencies = [currency for (cid, _), (_, currency) in published.items() if cid == catalog.id]
        if currencies and currencies[-1] != catalog.currency:
            raise LedgerError("catalog_conflict", f"catalog {catalog.id} bills in {currencies[-1]} in this ledger, "
                              f"and this version in {catalog.currency}: its workspaces would be billed in another "
                              "currency. A catalog in another currency needs its own id")

    def _published_catalogs(self) -> dict[tuple[str, str], tuple[str, str]]:
        if self._published is None:
            self._published = dict(map(_entry, self.catalog_log.get()))
        return self._published

    def _unpublished(self, catalog: Catalog) -> list[Any]:
        """The CatalogPublished event a first decision on `catalog` records with it, if any."""
        if (catalog.id, catalog.version) in self._published_catalogs():
            return []
        return [self.catalog_log.trigger_event(catalog_id=catalog.id, version=catalog.version,
                                               document=catalog.model_dump(mode="json"),
                                               content_hash=catalog.content_hash)]

    def _now_published(self, logged: list[Any]) -> None:
        """After a save: the catalogs it published are recorded."""
        published = self._published_catalogs()
        published.update(_entry(e) for e in logged if e.originator_id == self.catalog_log.originator_id)


def _entry(published: Any) -> tuple[tuple[str, str], tuple[str, str]]:
    """A CatalogPublished event as (id, version) -> (content hash, currency)."""
    return (published.catalog_id, published.version), (published.content_hash, published.document.get("currency", ""))
