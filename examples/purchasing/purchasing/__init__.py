"""A purchasing agent written for LangGraph alone: nothing in it knows Signoff."""
