from django.shortcuts import render


def home(request):
    """Placeholder front page until the webmail lands: where to find the admin."""
    return render(request, "webmail/home.html")
