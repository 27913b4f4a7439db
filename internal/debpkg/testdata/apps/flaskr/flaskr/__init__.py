"""The basic blog app built in the Flask tutorial."""

import os

from flask import Flask

__version__ = "1.0.0"


def create_app(test_config=None):
    """Create and configure an instance of the Flask application."""
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev",
        DATABASE=os.path.join(app.instance_path, "flaskr.sqlite"),
    )
    if test_config is None:
        app.config.from_pyfile("config.py", silent=True)
    else:
        app.config.update(test_config)

    # The instance folder holds the database; Flask does not create it.
    os.makedirs(app.instance_path, exist_ok=True)

    @app.route("/health")
    def health():
        # The package's version, as the unit's environment gives it.
        return {"status": "ok", "version": os.environ.get("TANDEM_APP_VERSION", __version__)}

    from . import db, auth, blog

    db.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(blog.bp)
    app.add_url_rule("/", endpoint="index")
    return app
