"""The joint query language: a SQL subset parsed with sqlglot into a typed plan."""
