"""Content-Security-Policy for webmail responses (Django 5.2 has no CSP of its own).

Pages: our own scripts and styles only, no inline script, no eval (htmx is configured
without it), frames only from us. Mail bodies: a separate response, shown in an iframe
sandboxed by its attribute and again by its own CSP, with no script at all, styles
only inline, images only embedded (data:) unless the user allowed remote ones.
"""
from functools import wraps

PAGE_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",
    "frame-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])

# The sandbox flags of the body frame: links may open a new top-level tab, nothing else.
SANDBOX = "allow-popups allow-popups-to-escape-sandbox"


def body_policy(*, remote_images):
    images = "data: https: http:" if remote_images else "data:"
    return "; ".join([
        "default-src 'none'",
        f"img-src {images}",
        "style-src 'unsafe-inline'",
        "font-src data:",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'self'",
        f"sandbox {SANDBOX}",
    ])


# Downloads and previews: never a document that runs anything, even if a browser sniffs.
DOWNLOAD_POLICY = "default-src 'none'; sandbox"
# An image or PDF shown in the browser: the image itself, or the browser's PDF viewer.
PREVIEW_POLICY = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; object-src 'self'"


def page_csp(view):
    @wraps(view)
    def wrapper(request, *args, **kwargs):
        response = view(request, *args, **kwargs)
        response.setdefault("Content-Security-Policy", PAGE_POLICY)
        response.setdefault("Referrer-Policy", "same-origin")
        return response

    return wrapper
