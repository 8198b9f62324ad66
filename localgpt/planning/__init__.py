"""Stage 1, planning: the plan schema, validation, mending, the passes over every plan, demos and their
retrieval, the lexicons of each language, and the Planner. See docs/planning.md."""
