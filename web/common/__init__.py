"""web/common"""
