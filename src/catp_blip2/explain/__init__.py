"""`catp-blip2 explain`: which query tokens a model keeps for one image and question, and where each one looks.

`explanation` computes it from the model's own pass, `picture` draws it, `command` is the subcommand.
"""

from .explanation import DEFAULT_VQA_PROMPT, Explanation, explain, image_grid, vote_shares
from .picture import draw_explanation

__all__ = ["DEFAULT_VQA_PROMPT", "Explanation", "draw_explanation", "explain", "image_grid", "vote_shares"]
