"""``tlbench recommend FOLDER``: the search and its page."""
