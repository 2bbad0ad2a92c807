"""Radicale storage that keeps the resource calendars (reservations/<resource>/) free of
double bookings: an event there is refused when it overlaps another one of that calendar.

Radicale itself stores whatever CalDAV clients send; this is the one rule a room, desk or
machine needs. Recurring bookings are refused in resource calendars (book each slot).
Selected in the configuration with [storage] type = booking.
"""

from __future__ import annotations

from radicale import item as radicale_item
from radicale.storage import multifilesystem

RESOURCES = "reservations/"


class BookingRefused(ValueError):
    pass


def _slot(item: radicale_item.Item) -> tuple[int, int] | None:
    if item.component_name != "VEVENT":
        return None
    return item.time_range


class Collection(multifilesystem.Collection):
    def upload(self, href: str, item: radicale_item.Item) -> radicale_item.Item:
        if self.path.startswith(RESOURCES) and item.component_name == "VEVENT":
            event = item.vobject_item.vevent
            if hasattr(event, "rrule") or hasattr(event, "rdate"):
                raise BookingRefused(f"{self.path}: recurring bookings are refused, book each slot")
            start, end = item.time_range
            for other in self.get_all():
                slot = _slot(other)
                if other.href == href or other.uid == item.uid or slot is None:
                    continue
                if slot[0] < end and start < slot[1]:
                    raise BookingRefused(
                        f"{self.path} is already booked then ({other.uid}); pick a free slot"
                    )
        return super().upload(href, item)


class Storage(multifilesystem.Storage):
    _collection_class = Collection
