"""What the assistant's tools write: placed orders and table reservations (SQLAlchemy).

Schema by Alembic (``web/fleet/migrations/versions/0003_assistant.py``). A reservation
holds a table for the restaurant's ``slot_minutes``; every half hour it covers is a
``reservation_cells`` row whose primary key is (project, table, half hour), so the
database itself refuses an overlapping booking: booking tries the free tables that
fit, smallest first, and a conflict (another request won the race) just moves on
to the next table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import DateTime, ForeignKey, Integer, Numeric, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from chat_service.menu import WEEKDAYS, Restaurant

CELL = timedelta(minutes=30)


class Base(DeclarativeBase):
    """The assistant's tables; the web tier's migrations create them with its own."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Order(Base):
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(64))
    total: Mapped[Decimal] = mapped_column(Numeric(10, 2))
    currency: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16), default="placed")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class OrderItem(Base):
    __tablename__ = "order_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    order_id: Mapped[int] = mapped_column(ForeignKey("orders.id", ondelete="CASCADE"))
    item_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    quantity: Mapped[int] = mapped_column(Integer)
    unit_price: Mapped[Decimal] = mapped_column(Numeric(10, 2))


class Reservation(Base):
    __tablename__ = "reservations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    project: Mapped[str] = mapped_column(String(64))
    session_id: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    party_size: Mapped[int] = mapped_column(Integer)
    table_id: Mapped[str] = mapped_column(String(32))
    starts_at: Mapped[datetime] = mapped_column(DateTime)
    ends_at: Mapped[datetime] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ReservationCell(Base):
    __tablename__ = "reservation_cells"

    reservation_id: Mapped[int] = mapped_column(ForeignKey("reservations.id", ondelete="CASCADE"))
    project: Mapped[str] = mapped_column(String(64), primary_key=True)
    table_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    cell: Mapped[datetime] = mapped_column(DateTime, primary_key=True)


class BookingError(ValueError):
    """The booking cannot be made (closed, too large a party, no table free); ``code``
    says which (``too_large``, ``closed_day``, ``not_open``, ``closing``, ``full``)."""

    def __init__(self, message: str, code: str = "full") -> None:
        super().__init__(message)
        self.code = code
        self.details: dict[str, Any] = {}


@dataclass(frozen=True)
class Availability:
    starts_at: datetime
    party_size: int
    free_tables: list[str]
    reason: str = ""
    code: str = ""  # why not (BookingError's codes); "" when available

    @property
    def available(self) -> bool:
        return bool(self.free_tables)


def opening_ranges(restaurant: Restaurant, day: datetime) -> list[tuple[time, time]]:
    """The day's opening ranges: "12:00-15:00, 18:00-23:00" -> two ranges; closed -> none."""
    spec = restaurant.hours.get(WEEKDAYS[day.weekday()], "closed").strip().lower()
    ranges = []
    for part in spec.split(","):
        if "-" not in part:
            continue
        start, end = (p.strip() for p in part.split("-", 1))
        ranges.append((time.fromisoformat(start), time.fromisoformat(end)))
    return ranges


class Store:
    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self._sessions = sessions

    def close(self) -> None:
        bind = self._sessions.kw.get("bind")
        if bind is not None:
            bind.dispose()

    # -- orders ----------------------------------------------------------------------

    def place_order(
        self, project: str, session_id: str, restaurant: Restaurant, cart: dict[str, int]
    ) -> dict[str, Any]:
        """Store the cart as a placed order with its total; the cart must not be empty."""
        lines = [(restaurant.item(i), q) for i, q in cart.items() if q > 0]
        if not lines or any(item is None for item, _ in lines):
            raise ValueError("the order is empty" if not lines else "the order has unknown items")
        total = sum(Decimal(str(item.price)) * q for item, q in lines if item)
        with self._sessions.begin() as db:
            order = Order(
                project=project, session_id=session_id, total=total, currency=restaurant.currency
            )
            db.add(order)
            db.flush()
            for item, q in lines:
                assert item is not None
                db.add(
                    OrderItem(
                        order_id=order.id,
                        item_id=item.id,
                        name=item.name,
                        quantity=q,
                        unit_price=Decimal(str(item.price)),
                    )
                )
            order_id = order.id
        return {"order_id": order_id, "total": float(total), "currency": restaurant.currency}

    def orders(self, project: str, session_id: str) -> list[dict[str, Any]]:
        with self._sessions() as db:
            rows = db.scalars(
                select(Order).where(Order.project == project, Order.session_id == session_id)
            ).all()
            out = []
            for order in rows:
                items = db.scalars(select(OrderItem).where(OrderItem.order_id == order.id)).all()
                out.append(
                    {
                        "order_id": order.id,
                        "total": float(order.total),
                        "items": {i.item_id: i.quantity for i in items},
                    }
                )
        return out

    # -- reservations ----------------------------------------------------------------

    def check(
        self, project: str, restaurant: Restaurant, starts_at: datetime, party_size: int
    ) -> Availability:
        """Which tables could seat ``party_size`` from ``starts_at`` for one slot."""
        ends_at = starts_at + timedelta(minutes=restaurant.slot_minutes)
        code, reason = self._refusal(restaurant, starts_at, ends_at, party_size)
        if reason:
            return Availability(starts_at, party_size, [], reason, code)
        cells = list(_cells(starts_at, ends_at))
        with self._sessions() as db:
            taken = set(
                db.scalars(
                    select(ReservationCell.table_id).where(
                        ReservationCell.project == project, ReservationCell.cell.in_(cells)
                    )
                ).all()
            )
        fitting = sorted(
            (t for t in restaurant.tables if t.seats >= party_size), key=lambda t: (t.seats, t.id)
        )
        free = [t.id for t in fitting if t.id not in taken]
        if not free:
            return Availability(starts_at, party_size, [], "no table is free then", "full")
        return Availability(starts_at, party_size, free)

    def book(
        self,
        project: str,
        restaurant: Restaurant,
        session_id: str,
        starts_at: datetime,
        party_size: int,
        name: str = "guest",
    ) -> dict[str, Any]:
        """Book the smallest free table that fits; BookingError when none can be had."""
        availability = self.check(project, restaurant, starts_at, party_size)
        if not availability.available:
            raise BookingError(availability.reason, availability.code)
        ends_at = starts_at + timedelta(minutes=restaurant.slot_minutes)
        for table_id in availability.free_tables:
            try:
                with self._sessions.begin() as db:
                    booking = Reservation(
                        project=project,
                        session_id=session_id,
                        name=name,
                        party_size=party_size,
                        table_id=table_id,
                        starts_at=starts_at,
                        ends_at=ends_at,
                    )
                    db.add(booking)
                    db.flush()
                    for cell in _cells(starts_at, ends_at):
                        db.add(
                            ReservationCell(
                                reservation_id=booking.id,
                                project=project,
                                table_id=table_id,
                                cell=cell,
                            )
                        )
                    booking_id = booking.id
            except IntegrityError:
                continue  # another booking took this table meanwhile: try the next
            return {
                "reservation_id": booking_id,
                "table_id": table_id,
                "party_size": party_size,
                "starts_at": starts_at.isoformat(timespec="minutes"),
            }
        raise BookingError("no table is free then", "full")

    def reservations(self, project: str) -> list[dict[str, Any]]:
        with self._sessions() as db:
            rows = db.scalars(select(Reservation).where(Reservation.project == project)).all()
            return [
                {
                    "reservation_id": r.id,
                    "session_id": r.session_id,
                    "table_id": r.table_id,
                    "party_size": r.party_size,
                    "starts_at": r.starts_at.isoformat(timespec="minutes"),
                }
                for r in rows
            ]

    @staticmethod
    def _refusal(
        restaurant: Restaurant, starts_at: datetime, ends_at: datetime, party_size: int
    ) -> tuple[str, str]:
        """(code, reason) of a refusal; ("", "") when the booking fits the rules."""
        if party_size < 1:
            return "invalid", "a party needs at least one guest"
        if party_size > restaurant.largest_table():
            return "too_large", f"our largest table seats {restaurant.largest_table()}"
        ranges = opening_ranges(restaurant, starts_at)
        for opens, closes in ranges:
            if opens <= starts_at.time() < closes:
                if ends_at.date() == starts_at.date() and ends_at.time() <= closes:
                    return "", ""
                minutes = restaurant.slot_minutes
                return "closing", f"we close at {closes:%H:%M}: a booking lasts {minutes} min"
        code = "not_open" if ranges else "closed_day"
        return code, f"we are not open at {starts_at:%A %H:%M}"


def _cells(starts_at: datetime, ends_at: datetime) -> list[datetime]:
    first = starts_at.replace(minute=(starts_at.minute // 30) * 30, second=0, microsecond=0)
    cells = []
    cell = first
    while cell < ends_at:
        cells.append(cell)
        cell += CELL
    return cells
