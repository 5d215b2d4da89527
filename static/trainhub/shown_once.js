// A page that shows a secret once answers a POST: make reloading it a plain GET, so a reload
// neither submits the form again (a second secret) nor shows this one again.
history.replaceState(null, "", location.href);
