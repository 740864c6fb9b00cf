"""webchat: chat with LLM agents in the browser, every token and tool call streamed live."""

__version__ = "0.1.0"
