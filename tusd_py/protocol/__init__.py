"""The tus protocol layer: headers, handlers, and the endpoint that dispatches to them."""
