"""Text tasks served by the controller LLM itself, as HuggingGPT does when no dedicated model is installed."""

from __future__ import annotations

from localgpt.errors import ExpertError, InputError
from localgpt.experts.base import Expert, ExpertOutput
from localgpt.llm import FREE_TEXT_REPEAT_PENALTY
from localgpt.runtime.runs import RunDir

MAX_TOKENS = 384


def instruction(task: str, inputs: dict[str, str]) -> str:
    """The prompt that asks the LLM to do ``task`` on ``inputs``."""
    text = inputs.get("text", "")
    if task == "summarization":
        return f"Summarize the following text in a few sentences.\n\n{text}"
    if task == "translation":
        target = inputs.get("target_language") or "English"
        return f"Translate the following text into {target}. Reply with the translation only.\n\n{text}"
    if task == "question-answering":
        return (f"Answer the question from the context only.\n\nContext: {inputs.get('context', '')}\n\n"
                f"Question: {inputs.get('question', '')}")
    if task == "text-classification":
        labels = inputs.get("labels") or "positive, negative, neutral"
        return f"Classify the text as one of: {labels}. Reply with the label only.\n\nText: {text}"
    if task == "token-classification":
        return ("List the named entities in the text, one per line as 'entity: type' "
                f"(PERSON, ORGANIZATION, LOCATION, DATE, OTHER).\n\nText: {text}")
    if task in ("conversational", "text-generation", "text2text-generation"):
        return text
    raise ExpertError(f"the controller LLM does not serve task '{task}'")


class LLMTextExpert(Expert):
    """Runs a text task by prompting the controller LLM."""

    def run(self, task: str, inputs: dict[str, str], out: RunDir) -> ExpertOutput:
        """Ask the LLM and return its reply as text."""
        llm = self.ctx.llm
        if llm is None:
            raise ExpertError("no controller LLM is loaded to serve text tasks")
        prompt = instruction(task, inputs)
        if not prompt.strip():
            raise InputError(f"task {task} got an empty text")
        reply = llm.generate([{"role": "user", "content": prompt}], max_tokens=MAX_TOKENS,
                             repeat_penalty=FREE_TEXT_REPEAT_PENALTY).strip()
        return ExpertOutput(outputs={"text": reply}, data={"served_by": "controller-llm"})
