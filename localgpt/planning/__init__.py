"""Stage 1, planning: the plan schema, validation, mending, tidying passes, demos and their
retrieval, and the Planner. See docs/planning.md."""
