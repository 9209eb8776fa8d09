from django import template

register = template.Library()


@register.filter
def get_item(mapping: dict, key: str):
    """Dictionary lookup by a variable key (result columns are named by the query)."""
    return mapping.get(key)
