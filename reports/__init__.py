"""Tables and plots built only from stored results; imports nothing of ours and never loads a model."""
