"""The panel's pages, one module per record or page; admin.app registers them (this package imports nothing,
so importing one view never loads the others).

base         the login guard, typed `expose`/`action`, ThreadlineModelView (role rules, reassign, CSV export)
filters      list filters and their per-request option lists
contacts, companies, deals, tasks, activities    the record lists and forms
users, pipelines                                 admin-only configuration (users; pipelines and stages)
records      the contact, company and deal pages with their timelines and forms
board        the pipeline board and its move endpoint
dashboard    the home page's numbers
syncstatus   the mailbox sync status (admins)
notifications   each user's alerts and the navbar's unread count
"""
