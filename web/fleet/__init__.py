"""web/fleet"""
