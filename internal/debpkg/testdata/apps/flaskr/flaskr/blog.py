from flask import Blueprint, flash, g, redirect, render_template_string, request, url_for

from .auth import login_required
from .db import get_db

bp = Blueprint("blog", __name__)

INDEX = """<h1>Posts</h1>{% for post in posts %}<article><h2>{{ post['title'] }}</h2>
<p>by {{ post['username'] }}</p><p>{{ post['body'] }}</p></article>{% endfor %}"""


@bp.route("/")
def index():
    posts = get_db().execute(
        "SELECT p.id, title, body, created, author_id, username FROM post p JOIN user u ON p.author_id = u.id ORDER BY created DESC"
    ).fetchall()
    return render_template_string(INDEX, posts=posts)


@bp.route("/create", methods=("GET", "POST"))
@login_required
def create():
    if request.method == "POST":
        title, body = request.form["title"], request.form["body"]
        if not title:
            flash("Title is required.")
        else:
            db = get_db()
            db.execute("INSERT INTO post (title, body, author_id) VALUES (?, ?, ?)", (title, body, g.user["id"]))
            db.commit()
            return redirect(url_for("blog.index"))
    return "<form method=post><input name=title><textarea name=body></textarea><input type=submit></form>"
