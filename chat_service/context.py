"""Stage 2's context for a restaurant turn: only what the turn's class needs, which
is where the prompt gets small; and, for comparison, the whole-menu prompt the old
assistant sent with every message."""

from __future__ import annotations

import json

from chat_service.menu import Item, Restaurant, normalise
from chat_service.planner import CLASS_TOOLS
from chat_service.projects import Project
from chat_service.prompts import NO_TOPIC, answer_messages, tool_docs
from chat_service.sessions import Session
from chat_service.tools import Action


def build_context(
    label: str, message: str, project: Project, session: Session, actions: list[Action]
) -> str:
    """Only what ``label`` needs: this is where the prompt gets small."""
    restaurant = project.restaurant
    if label in ("menu", "allergy_dietary"):
        items = relevant_items(message, restaurant, actions, dietary=label == "allergy_dietary")
        lines = "\n".join(i.line(restaurant.currency) for i in items)
        return f"Menu, the part that matters here:\n{lines}" if lines else _categories(restaurant)
    if label == "order":
        tools = tuple(t for t in CLASS_TOOLS["order"] if t in project.tools)
        return "\n".join(p for p in (tool_docs(tools), _results(actions)) if p)
    if label == "reservation":
        tools = tuple(t for t in CLASS_TOOLS["reservation"] if t in project.tools)
        if not tools:
            return "We do not take reservations here."
        sizes = f"Tables seat up to {restaurant.largest_table()}; a booking lasts "
        sizes += f"{restaurant.slot_minutes} minutes. {_hours(restaurant)}"
        return "\n".join(p for p in (tool_docs(tools), sizes, _results(actions)) if p)
    if label == "hours_location":
        return restaurant.facts()
    if label == "other":
        return NO_TOPIC.replace("{name}", project.name)
    return ""


def relevant_items(
    message: str, restaurant: Restaurant, actions: list[Action], dietary: bool
) -> list[Item]:
    """The menu sections a message is about: searched, named, or in a named category."""
    found: dict[str, Item] = {}
    for action in actions:
        if action.ok and action.tool == "menu_search" and (action.args or dietary):
            for raw in action.result["items"]:
                item = restaurant.item(raw["id"])
                if item:
                    found[item.id] = item
    if found:
        return list(found.values())
    text = normalise(message)
    named = [item for item, _ in restaurant.mentioned(message)]
    categories = {i.category for i in named} | {
        c for c in restaurant.categories if c.rstrip("s") in text
    }
    return named + [i for i in restaurant.items if i.category in categories and i not in named]


def _categories(restaurant: Restaurant) -> str:
    lines = [
        f"- {c}: " + ", ".join(i.name for i in restaurant.items if i.category == c)
        for c in restaurant.categories
    ]
    return "Our menu by section (ask for details of any):\n" + "\n".join(lines)


def _hours(restaurant: Restaurant) -> str:
    return "Opening hours: " + "; ".join(f"{d}: {h}" for d, h in restaurant.hours.items())


def _results(actions: list[Action]) -> str:
    if not actions:
        return ""
    done = "\n".join(json.dumps(a.to_dict(), separators=(",", ":")) for a in actions)
    return f"Done for this message (tell the guest):\n{done}"


def full_menu_prompt(project: Project) -> list[dict[str, str]]:
    """What the old assistant sent with every message: the whole menu and every tool."""
    restaurant = project.restaurant
    menu = "\n".join(i.line(restaurant.currency) for i in restaurant.items)
    context = "\n\n".join(
        [f"Menu:\n{menu}", restaurant.facts(), _hours(restaurant), tool_docs(project.tools)]
    )
    return answer_messages(project.system(), context, [], "")
