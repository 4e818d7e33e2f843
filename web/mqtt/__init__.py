"""web/mqtt"""
