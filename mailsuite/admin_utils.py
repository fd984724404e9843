"""Admin pieces shared by the apps."""


class ReadOnlyMixin:
    """For admin pages and inlines that show rows only the mail system itself writes."""

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
