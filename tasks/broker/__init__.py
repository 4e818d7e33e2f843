"""tasks/broker"""
