"""`python -m service.tools.labelstudio`: Label Studio as pickserve's labeling team.

The bridge keeps a Label Studio project filled with the items pickserve asks about and
brings the annotations back as labels:

- **Project.** Created (or reused, by title) with a labeling config built from the pool's
  classes: the item as an image when the pool declares `image_shape`, else a table of
  features. Candidates' predictions are not shown unless `--show-predictions` (they anchor
  the annotators' judgement and bias the labels).
- **Tasks.** Items leased from `GET /v1/queries` are imported one task each, carrying the
  item id. A durable map (SQLite) from item to task is written before each import and
  completed after it, so a restart finds a task whose import was cut short instead of
  making a duplicate.
- **Leases.** While a task is open, the bridge renews its item's lease
  (`POST /v1/queries/renew`); a task whose item no longer waits (labeled elsewhere,
  expired, its round ended) is withdrawn from Label Studio.
- **Annotations** arrive by webhook (with a shared secret in a header) and by a periodic
  sweep of the project's tasks, since Label Studio sends each webhook once and never
  retries. Both post to `/v1/feedback` with the Idempotency-Key `ls-{project}-{task}`
  (`-{annotation}` added for a task's later annotations), so an annotation seen twice is
  applied once. A task whose first annotation is a skip (`was_cancelled`) gives no label.
- **Annotators and overlap.** Each annotation is its Label Studio user's label (a labeler
  of their own in pickserve). An item pickserve hands back after its task was answered
  wants another annotator: the task is opened again (its `overlap` one above the
  annotations made), and Label Studio hands it to someone who has not annotated it.
"""
