"""Word lists, one module per language, each defining ``LEXICON`` (a :class:`localgpt.planning.language.Lexicon`).

They are the planner's last resort (see docs/planning.md): a lexicon is read only for a request in its
language, and a word it finds only ever adds evidence (for a task type, for a chain of actions, for the
user's original file); a word that is absent never changes a plan.
"""
